"""Adapters: the ways in from outside (HTTP, the command line, Prefect, OpenFeature).

Each subpackage turns an outside protocol into calls of `rollout.app` and `rollout.sdk`; none of
them holds a rule of its own.
"""
