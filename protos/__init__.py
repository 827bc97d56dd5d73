"""The gRPC contract, package eport.v1 (see issue 3)."""
