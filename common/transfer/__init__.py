"""Chunked, resumable, verified firmware transfer on every hop (cloud -> gateway -> device).

``download`` is the sans-IO core (credit window, per-chunk hash check, resume, backoff),
``partial`` the download's file on disk, ``fetcher`` the asking side on asyncio, ``responder``
the answering side on asyncio (the cloud and each gateway give it their offers and chunks),
``serve`` the answering side's reads and checks.
"""

from common.transfer.download import Download, Plan, Verdict
from common.transfer.fetcher import Fetcher
from common.transfer.partial import PartialFile
from common.transfer.serve import MAX_CHUNK, check_request, read_chunk

__all__ = ["MAX_CHUNK", "Download", "Fetcher", "PartialFile", "Plan", "Verdict", "check_request", "read_chunk"]
