"""eportd, the local card daemon (see issue 3)."""
