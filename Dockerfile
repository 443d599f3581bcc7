FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY migrations ./migrations
COPY jobs ./jobs
RUN pip install --no-cache-dir -e .
ENV PYTHONUNBUFFERED=1
CMD ["pipeline", "--help"]
