"""pop_tf: learn what makes a garment image popular, and generate popular, diverse garments."""

__version__ = "0.1.0"
