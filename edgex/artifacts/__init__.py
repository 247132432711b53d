"""What edgex does with a model file on the host: convert it (``convert``), measure its accuracy through its own
runtime (``accuracy``) and its latency on devices (``latency``), and classify images with it (``predict``)."""
