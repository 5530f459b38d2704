"""The official `openai` Python SDK against a live Easel, unchanged apart from its base URL.

Run by tests/openai_sdk.rs, which starts Easel (with a fake OpenAI upstream behind the
`gpt-image-*` models) and passes: EASEL_BASE_URL (`http://127.0.0.1:<port>/v1`), EASEL_API_KEY,
EASEL_SLOW_API_KEY (a tenant allowed one request a minute) and EASEL_INPUT_DIR (a.png, b.png,
mask.png). Every check asserts; the first failure exits non-zero with its traceback.
"""

import base64
import os
import sys
import urllib.request

import openai
from openai import OpenAI

BASE = os.environ["EASEL_BASE_URL"]
KEY = os.environ["EASEL_API_KEY"]
INPUTS = os.environ["EASEL_INPUT_DIR"]
PNG = b"\x89PNG\r\n\x1a\n"

client = OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=60)


def path(name):
    return os.path.join(INPUTS, name)


def is_png_b64(data):
    return base64.b64decode(data).startswith(PNG)


def check(name, condition, detail=""):
    if not condition:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok - {name}", flush=True)


# images.generate, answered with links (the default without a GPT image model)
r = client.images.generate(prompt="a red fox in the snow", n=2)
check("generate url: two images", len(r.data) == 2, r)
with urllib.request.urlopen(r.data[0].url) as link:
    check("generate url: the link serves a PNG", link.read().startswith(PNG))
check("generate url: created", r.created > 1_700_000_000, r.created)

# images.generate, answered inline
r = client.images.generate(prompt="a red fox", response_format="b64_json")
check("generate b64_json", is_png_b64(r.data[0].b64_json) and r.data[0].url is None, r)

# a GPT image model, routed to the (fake) OpenAI upstream: its answer's shape comes through
r = client.images.generate(model="gpt-image-1", prompt="a lighthouse", quality="low", size="1024x1536")
check("generate gpt-image-1: b64_json", is_png_b64(r.data[0].b64_json), r)
check("generate gpt-image-1: usage", r.usage is not None and r.usage.total_tokens == 4210, r.usage)
check("generate gpt-image-1: size and quality", (r.size, r.quality) == ("1024x1536", "low"), r)
check("generate gpt-image-1: output_format", r.output_format == "png", r.output_format)

# images.edit: one image, several, several with a mask
with open(path("a.png"), "rb") as a:
    r = client.images.edit(image=a, prompt="make it blue", response_format="b64_json")
check("edit one image", is_png_b64(r.data[0].b64_json), r)
with open(path("a.png"), "rb") as a, open(path("b.png"), "rb") as b:
    r = client.images.edit(image=[a, b], prompt="combine them", response_format="b64_json")
check("edit several images", is_png_b64(r.data[0].b64_json), r)
with open(path("a.png"), "rb") as a, open(path("b.png"), "rb") as b, open(path("mask.png"), "rb") as m:
    r = client.images.edit(image=[a, b], mask=m, prompt="only the sky", n=2)
check("edit with a mask", len(r.data) == 2 and r.data[0].url.startswith("http"), r)
with open(path("a.png"), "rb") as a, open(path("mask.png"), "rb") as m:
    r = client.images.edit(model="gpt-image-1", image=[a], mask=m, prompt="a hat", input_fidelity="high")
check("edit on gpt-image-1", is_png_b64(r.data[0].b64_json) and r.usage is not None, r)

# images.create_variation
with open(path("b.png"), "rb") as b:
    r = client.images.create_variation(image=b, n=2, response_format="b64_json")
check("create_variation", len(r.data) == 2 and all(is_png_b64(d.b64_json) for d in r.data), r)

# models.list
ids = [m.id for m in client.models.list()]
check("models.list", "local" in ids and "gpt-image-1" in ids and "dall-e-3" in ids, ids)

# typed exceptions
try:
    client.images.generate(model="dall-e-9", prompt="x")
    check("400 BadRequestError", False, "no error")
except openai.BadRequestError as e:
    check("400 BadRequestError", e.status_code == 400 and e.code == "model_not_found" and e.param == "model", e)

try:
    OpenAI(base_url=BASE, api_key="not-a-key", max_retries=0).images.generate(prompt="x")
    check("401 AuthenticationError", False, "no error")
except openai.AuthenticationError as e:
    check("401 AuthenticationError", e.status_code == 401 and e.code == "invalid_api_key", e)

slow = OpenAI(base_url=BASE, api_key=os.environ["EASEL_SLOW_API_KEY"], max_retries=0)
slow.images.generate(prompt="the one allowed call")
try:
    slow.images.generate(prompt="one too many")
    check("429 RateLimitError", False, "no error")
except openai.RateLimitError as e:
    retry_after = e.response.headers.get("retry-after")
    check("429 RateLimitError", e.status_code == 429 and retry_after is not None, e)

print(f"all checks passed (openai {openai.__version__})")
sys.exit(0)
