"""Baselines that hiddenstate's own components are measured against. They exist to be beaten honestly: each is
written the straightforward way a competent engineer would write it, not handicapped."""
