"""Stand-ins for Chimera Linux tools that can't run on the test machine, used ONLY by tests.

Each stand-in is an executable whose docstring lists the real tool's behaviours it honours;
the tests check each of them. They are not the real tools: see README.md.
"""
