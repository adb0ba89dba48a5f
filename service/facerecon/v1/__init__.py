"""Generated code for the gRPC contract `facerecon.v1` (proto/facerecon/v1/*.proto).

Do not edit: regenerate with `python proto/generate.py` (tests/test_proto.py checks it).
"""
