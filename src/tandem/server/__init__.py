"""`tandem serve`: the inference server (Open Inference Protocol v2, TF-Serving REST, image endpoint)."""
