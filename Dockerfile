# The scoring service. Runs `scoring worker` by default; any `scoring` command works:
#   docker run --rm scoring:local simulate --transactions 1000
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY consumers ./consumers
COPY models ./models
RUN pip install . \
    && useradd --create-home --uid 10001 scoring

# Faust keeps its data folder in the working directory: it must be writable.
USER scoring
WORKDIR /home/scoring

EXPOSE 9108 8000
ENTRYPOINT ["scoring"]
CMD ["worker"]
