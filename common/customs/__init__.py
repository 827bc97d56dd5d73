"""The customs declaration (报关申报) model shared by the `eport customs` client and the data
centre: the document and its validation, code tables, numbers, and the signed-request envelope.
"""
