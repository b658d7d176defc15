"""The submit side of imggen: the job contract, SQL records, enqueueing, client and CLI.

Never imports torch or the generation library, so a web backend can install it alone.
"""

from producer.client import Client, JobHandle
from producer.errors import ImggenError, InvalidJobSpec, JobNotFound, JobTimeout
from producer.spec import JobSpec

__all__ = [
    "Client",
    "ImggenError",
    "InvalidJobSpec",
    "JobHandle",
    "JobNotFound",
    "JobSpec",
    "JobTimeout",
]
