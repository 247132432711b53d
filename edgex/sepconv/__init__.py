"""Separable against regular convolutions, the paper's central question measured on this device: layer by layer
(``sweep``, its files in ``sweep_report``, the shapes in ``layer_shapes``), along the spectrum of segments
(``spectrum``), model against its regular twin (``compare``), and where a model's time goes (``breakdown``)."""
