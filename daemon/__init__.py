"""eportd, the local card daemon."""
