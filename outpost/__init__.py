"""Outpost: build, sign, publish and deploy one web app to a small fleet of hosts."""
