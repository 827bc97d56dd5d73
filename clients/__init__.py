"""Thin clients of eportd and of the data centre."""
