"""VisualQuality-R1 (Wu et al., 2025): a no-reference quality rating (1-5) by a Qwen2.5-VL-7B fine-tune.

The reference rates its students' visual quality with it, as a FINAL evaluation: it generates
text for every image (7 B parameters), far too slow for every rung of a search.

Published usage (``TianheWu/VisualQuality-R1``'s README, "Non-Thinking Inference"): one user
message holding the image and `QUESTION`, the chat template with ``add_generation_prompt=True``
and ``add_vision_id=True``, left padding, and the score parsed from the answer as `parse_answer`
does. The README's code puts a random integer in place of an answer it cannot parse; here an
unparsable answer is NaN, counted, and reported beside the mean (``visualquality_r1_unparsable``),
never a silent number; so is a number outside the rating's range [1, 5] (the README's parsing
would average it in: a random model answers "7777777777"). Decoding: greedy by default (reproducible; the README samples with
``top_k=50``), ``do_sample=True`` gives the README's sampling.

Loading: ``Qwen2_5_VLForConditionalGeneration``, the folder's image processor and tokenizer, and
its chat template. transformers 5's ``Qwen2_5_VLProcessor`` cannot be built without torchvision
(its video processor needs it), so the processor's one job on images is done here: each
``<|image_pad|>`` expanded to ``prod(image_grid_thw) / merge_size**2`` tokens and
``mm_token_type_ids`` marking them. Images are first resized as ``qwen_vl_utils.fetch_image``
does (`smart_resize`: sides rounded to multiples of 28, pixels within [4, 16384] x 28 x 28).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence

import torch
from PIL import Image

HUB_ID = "TianheWu/VisualQuality-R1-7B"
PROMPT = ("You are doing the image quality assessment task. Here is the question: "
          "What is your overall rating on the quality of this picture? The rating should be a float between 1 and 5, "
          "rounded to two decimal places, with 1 representing very poor quality and 5 representing excellent quality.")
QUESTION = f"{PROMPT} Please only output the final answer with only one score in <answer> </answer> tags."
RATING_MIN, RATING_MAX = 1.0, 5.0  # the prompt asks for a float between 1 and 5
IMAGE_FACTOR = 28  # qwen_vl_utils: patch 14 x merge 2
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"\d+(\.\d+)?")


def parse_answer(text: str) -> float | None:
    """The score in a model answer, as the published code reads it: the text of the last
    ``<answer>...</answer>`` (the whole answer when there is none), its first number; None when
    there is no number."""
    matches = _ANSWER.findall(text)
    answer = matches[-1].strip() if matches else text.strip()
    number = _NUMBER.search(answer)
    return float(number.group()) if number else None


def smart_resize(height: int, width: int, *, factor: int = IMAGE_FACTOR, min_pixels: int = MIN_PIXELS,
                 max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(H, W) multiples of ``factor``, near the input's aspect ratio, with H x W in [min, max] pixels."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"VisualQuality-R1: an image of {height}x{width} has an aspect ratio over 200")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def load_chat_template(directory: str, tokenizer) -> str:
    """The folder's chat template: chat_template.jinja, chat_template.json, else the tokenizer's."""
    jinja, js = os.path.join(directory, "chat_template.jinja"), os.path.join(directory, "chat_template.json")
    if os.path.isfile(jinja):
        with open(jinja) as f:
            return f.read()
    if os.path.isfile(js):
        with open(js) as f:
            return json.load(f)["chat_template"]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    raise ValueError(f"{directory} has no chat template (chat_template.jinja / chat_template.json / in "
                     f"tokenizer_config.json); it should be the {HUB_ID} folder")


class VisualQualityR1:
    """Quality ratings of images by VisualQuality-R1; an unparsable answer is NaN (and counted).

    Args:
        model: a loaded ``Qwen2_5_VLForConditionalGeneration`` (its device and dtype, eval mode).
        image_processor: the folder's Qwen2-VL image processor.
        tokenizer: the folder's tokenizer.
        chat_template: the folder's chat template (`load_chat_template`).
        max_new_tokens: generation budget per answer.
        do_sample: False (default): greedy; True: the README's sampling (top_k=50, top_p=1).
    """

    name = "visualquality_r1"

    def __init__(self, model, image_processor, tokenizer, chat_template: str, *, max_new_tokens: int = 512,
                 do_sample: bool = False):
        self.model, self.image_processor, self.tokenizer = model, image_processor, tokenizer
        self.max_new_tokens, self.do_sample = max_new_tokens, do_sample
        self.tokenizer.padding_side = "left"  # as the README: generation continues every row at its end
        message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
        self.text = tokenizer.apply_chat_template(message, chat_template=chat_template, tokenize=False,
                                                  add_generation_prompt=True, add_vision_id=True)
        self.image_token = "<|image_pad|>"
        self.image_token_id = model.config.image_token_id
        if self.text.count(self.image_token) != 1:
            raise ValueError(f"the chat template renders {self.text.count(self.image_token)} {self.image_token} "
                             f"tokens for one image, expected 1; is it the {HUB_ID} folder's?")
        self.last_answers: list[str] = []  # the raw answers of the last call, for inspection

    @torch.no_grad()
    def score_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Ratings (B,) float64 on the CPU; NaN where the answer has no rating in [1, 5]."""
        resized = [image.resize(tuple(reversed(smart_resize(image.height, image.width))), Image.BICUBIC)
                   for image in images]
        vision = self.image_processor(images=resized, return_tensors="pt")
        merge = int(self.image_processor.merge_size) ** 2
        texts = [self.text.replace(self.image_token, self.image_token * int(grid.prod() // merge))
                 for grid in vision["image_grid_thw"]]
        tokens = self.tokenizer(texts, padding=True, return_tensors="pt")
        device = self.model.device
        input_ids = tokens["input_ids"].to(device)
        sampling = {"do_sample": True, "top_k": 50, "top_p": 1.0} if self.do_sample else {"do_sample": False}
        out = self.model.generate(
            input_ids=input_ids, attention_mask=tokens["attention_mask"].to(device),
            pixel_values=vision["pixel_values"].to(device, self.model.dtype),
            image_grid_thw=vision["image_grid_thw"].to(device),
            mm_token_type_ids=(input_ids == self.image_token_id).int(),
            max_new_tokens=self.max_new_tokens, use_cache=True, **sampling)
        self.last_answers = self.tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True,
                                                        clean_up_tokenization_spaces=False)
        return torch.tensor([rating_or_nan(answer) for answer in self.last_answers], dtype=torch.float64)


def rating_or_nan(answer: str) -> float:
    """`parse_answer`'s number when it is a rating in [RATING_MIN, RATING_MAX], else NaN."""
    score = parse_answer(answer)
    return score if score is not None and RATING_MIN <= score <= RATING_MAX else math.nan


def load_visualquality_r1(directory: str, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16,
                          max_new_tokens: int = 512, do_sample: bool = False) -> VisualQualityR1:
    """VisualQuality-R1 from its folder (``TianheWu/VisualQuality-R1-7B``)."""
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(directory, dtype=dtype)
    model = model.to(device).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return VisualQualityR1(model, AutoImageProcessor.from_pretrained(directory), tokenizer,
                           load_chat_template(directory, tokenizer), max_new_tokens=max_new_tokens,
                           do_sample=do_sample)
