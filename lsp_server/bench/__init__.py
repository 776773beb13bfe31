"""`wisp bench`: replay realistic typing through the real server and report latencies."""
