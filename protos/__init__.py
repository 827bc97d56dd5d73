"""The gRPC contract, package eport.v1 (eportd) and eport.datacenter.v1."""
