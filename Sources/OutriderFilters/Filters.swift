// The filter chain (DESIGN.md §3): auth, rate limit and header rewriting.
