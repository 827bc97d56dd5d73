"""Thin clients of eportd (see issues 4-7)."""
