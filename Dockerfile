# The imggen image: workers, the API, migrations and Flower (a producer-only install is
# plain `pip install imggen`).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
WORKDIR /app
# PyPI's torch wheels for Linux carry their CUDA libraries: the GPU needs only the host driver.
RUN pip install --no-cache-dir "torch>=2.4"
# WordNet's database (/usr/share/wordnet): definitions for the shapes model's vocabulary mapping.
RUN apt-get update && apt-get install -y --no-install-recommends wordnet-base \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY imggen imggen
COPY producer producer
COPY worker worker
COPY migrations migrations
RUN pip install --no-cache-dir ".[worker,language,flower]"
# The artifacts folder exists, owned by the user the services run as, so that a fresh named
# volume mounted there takes that ownership (Docker copies it from the image).
RUN useradd --create-home --uid 1000 imggen \
    && mkdir -p /data/artifacts && chown imggen:imggen /data/artifacts
USER imggen
CMD ["imggen", "worker"]
