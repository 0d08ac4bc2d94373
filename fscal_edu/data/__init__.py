"""The data layer: features, annotations, episodes and the synthetic feature world."""
