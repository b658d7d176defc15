# The imggen worker image (the producer side installs with plain `pip install imggen`).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
WORKDIR /app
# PyPI's torch wheels for Linux carry their CUDA libraries: the GPU needs only the host driver.
RUN pip install --no-cache-dir "torch>=2.4"
COPY pyproject.toml README.md ./
COPY imggen imggen
COPY producer producer
COPY worker worker
COPY migrations migrations
RUN pip install --no-cache-dir ".[worker,language]"
RUN useradd --create-home imggen
USER imggen
CMD ["imggen", "worker"]
