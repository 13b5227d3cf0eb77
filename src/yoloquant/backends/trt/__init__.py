"""backends/trt."""
