"""Host-side vision utilities the library's models need around the graph (NumPy, vectorised)."""
