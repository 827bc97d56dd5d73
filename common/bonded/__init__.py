"""The bonded verification (保税核查) document model shared by its client and the data centre:
the eport-bonded/1 document, its save and declare checks (bonded manual §2.2, §2.4), its code tables
and the JSON/CSV import. The format is docs/bonded-document.md.
"""
