"""`eport`: the card command line, a thin client of eportd (it never touches a card itself)."""
