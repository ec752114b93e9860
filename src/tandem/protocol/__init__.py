"""Everything on the wire, for the server and the device SDK alike: numpy and the standard library only.

- ``datatypes``: OIP v2 datatypes ↔ numpy dtypes, and ``TensorSig`` (what a model takes or gives);
- ``tensors``: tensors from a request, checked against a ``TensorSig``;
- ``oip``: Open Inference Protocol v2 requests and answers, JSON and binary tensor data, both ways;
- ``classification``: Triton's classification extension (the top K classes as strings);
- ``tfserving``: TF-Serving REST predict (rows and columns) and status bodies, both ways;
- ``activations``: the int8 encoding of a split's intermediate tensor;
- ``status``: HTTP statuses ↔ TandemErrors;
- ``jsonbody``: JSON with orjson where installed (the server), the standard library otherwise (a device).
- ``origins``: the origin (scheme, host, port) of an OTA download URL, as signed payloads name them.
- ``training``: managed training (POST /v1/trainings): the spec, the job's event lines, server-sent events.

No HTTP library, no web framework, no torch: the server's routes and the device's cloud client are
thin users of these codecs (MLServer's ``codecs/`` and ``types/`` are the model).
"""
