"""eport.v1: the generated messages and stubs of eportd.proto (scripts/gen_protos.sh)."""
