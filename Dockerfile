# The rnnkit image: the web app (`rnnkit app`) and our embedded model server (`python -m serving`).
# Built by docker-compose.yml; the exports dir is mounted at /models at run time, never copied in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/rnnkit

# Dependencies first, pinned by constraints.txt, so code changes do not reinstall TensorFlow.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt -c constraints.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY app ./app
COPY models ./models
COPY pipelines ./pipelines
COPY serving ./serving
# Editable, so the web app's static files and templates are used from the source tree.
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 1000 rnnkit

USER rnnkit
EXPOSE 8080 8500 8501
CMD ["rnnkit", "app", "--server", "model-server:8500", "--host", "0.0.0.0"]
