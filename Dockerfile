# The rnnkit image: our model server (`python -m serving`) and the web app (`rnnkit app`).
# Like tensorflow/serving's image, it serves $MODEL_BASE_PATH/$MODEL_NAME (default /models/model)
# on gRPC 8500 and REST 8501, all interfaces, and takes tensorflow_model_server's flags:
#   docker run -p 8501:8501 -v $PWD/exports/sentiment:/models/sentiment -e MODEL_NAME=sentiment rnnkit
#   docker run ... rnnkit --model_config_file=/models/models.config
# A command instead of flags runs that command: `docker run -p 8080:8080 rnnkit rnnkit app ...`.
# Built by docker-compose.yml; the exports dir is mounted at /models at run time, never copied in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MODEL_NAME=model \
    MODEL_BASE_PATH=/models

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

COPY deploy/tf_serving_entrypoint.sh /usr/bin/tf_serving_entrypoint.sh

USER rnnkit
EXPOSE 8500 8501 8080
ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]
