# CPU image of zoo. Build: docker build -t zoo .
# Run the main job (LeNet-5 on the bundled digits):  docker run --rm zoo
# Compare models:                                     docker run --rm zoo zoo compare vgg16 resnet50 convnext_tiny
# Train on your own data:  docker run --rm -v /path/to/data:/data -v $PWD/runs:/home/zoo/app/runs zoo \
#                            zoo fit --config recipes/lenet5_mnist.yaml --data.root /data
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg

# The CPU build of torch keeps the image small (the default PyPI wheel carries CUDA).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch torchvision

RUN useradd --create-home --uid 1000 zoo
# the working directory belongs to the user the container runs as, so `zoo fit` can write runs/ there
# (WORKDIR alone would create it as root)
RUN install -d -o zoo -g zoo /home/zoo/app
WORKDIR /home/zoo/app
COPY --chown=zoo:zoo pyproject.toml README.md ./
COPY --chown=zoo:zoo zoo ./zoo
COPY --chown=zoo:zoo recipes ./recipes
# the same install as the README's quickstart, without the editable flag
RUN pip install . && rm -rf /root/.cache

USER zoo
CMD ["zoo", "fit", "--config", "recipes/lenet5_digits.yaml"]
