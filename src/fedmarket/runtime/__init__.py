"""How messages travel between parties: in-process (default) and, later, Flower."""
