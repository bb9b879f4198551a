"""Rate limiters (the `RateLimiter` port): token buckets in process, or in Redis across nodes."""
