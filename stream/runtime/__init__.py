"""What ``scoring worker`` runs: consuming, scoring, joining labels, learning, publishing.

Nothing here imports :mod:`stream.tools`.
"""
