#!/bin/sh
# The image's entrypoint, as tensorflow/serving's /usr/bin/tf_serving_entrypoint.sh: serve the
# model at $MODEL_BASE_PATH/$MODEL_NAME with gRPC on 8500 and REST on 8501, on all interfaces
# (inside a container, 127.0.0.1 would be unreachable from outside it). Arguments are more
# tensorflow_model_server flags; a later flag wins, and --model_config_file replaces the single
# model, as in TF Serving. A first argument that is no flag is run as a command instead
# (`docker run rnnkit rnnkit app ...`).
set -e
case "${1:-}" in
  "" | -*)
    exec python -m serving --host=0.0.0.0 --port=8500 --rest_api_port=8501 \
      --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
