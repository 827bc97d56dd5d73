"""`eport doctor`: ordered checks that say what is wrong with a card setup and what to do."""
