"""supernet-harness: how well does a weight-sharing supernet rank architectures?"""
__version__ = "0.1.0"
