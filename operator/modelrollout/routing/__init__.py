"""Traffic routing: the TrafficRouter interface and its providers."""
