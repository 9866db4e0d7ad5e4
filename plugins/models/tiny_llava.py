"""The tiny LLaVA: config builders for stock transformers classes, and the glue between stages.

Everything here is a stock transformers class, so a saved checkpoint loads with plain
``LlavaForConditionalGeneration.from_pretrained`` and ``AutoProcessor.from_pretrained``:

* vision tower: ``CLIPVisionModel`` (ViT, 64 px, 8 px patches -> 64 patch tokens + CLS);
* stage-1 partner: ``CLIPModel`` = that vision tower + a ``CLIPTextModel`` over the closed
  vocabulary + two projections + a learned temperature (InfoNCE, as in CLIP);
* language model: ``LlamaForCausalLM`` (RMSNorm, RoPE, SwiGLU), text-only pre-trained in stage 0;
* the LLaVA: ``LlavaForConditionalGeneration`` = vision tower -> 2-layer GELU MLP projector -> LM,
  with LLaVA-1.5's feature choice (penultimate vision layer, CLS dropped).

>>> from plugins.world import WorldConfig
>>> from plugins.models.tokenizer import build_vocab
>>> cfg, vocab = TinyLlavaConfig(), build_vocab(WorldConfig())
>>> llava = build_llava(cfg, vocab, image_size=64)
>>> type(llava).__name__, llava.config.image_seq_length
('LlavaForConditionalGeneration', 64)
"""
from __future__ import annotations

import torch
from pydantic import Field
from transformers import (
    CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, GenerationConfig, LlamaConfig,
    LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration,
)

from plugins.config import StrictConfig
from plugins.models.tokenizer import BOS, EOS, IMAGE, PAD, num_image_tokens


class TinyLlavaConfig(StrictConfig):
    """Sizes of the three towers; the defaults give about 1.4 M parameters in the saved LLaVA."""

    patch_size: int = Field(default=8, ge=2)  # ViT patch side in px; 64 px -> 8 x 8 = 64 image tokens
    vision_hidden: int = Field(default=96, ge=8)  # width of the vision tower
    vision_layers: int = Field(default=4, ge=2)  # transformer blocks in the vision tower (>= 2: LLaVA reads the penultimate)
    vision_heads: int = Field(default=4, ge=1)  # attention heads in the vision tower
    text_encoder_hidden: int = Field(default=64, ge=8)  # width of the stage-1 CLIP text encoder (not in the LLaVA)
    text_encoder_layers: int = Field(default=2, ge=1)  # blocks in the stage-1 CLIP text encoder
    text_encoder_heads: int = Field(default=4, ge=1)  # heads in the stage-1 CLIP text encoder
    projection_dim: int = Field(default=64, ge=8)  # shared image-text embedding size of stage 1
    lm_hidden: int = Field(default=128, ge=8)  # width of the Llama LM
    lm_layers: int = Field(default=4, ge=1)  # Llama decoder blocks
    lm_heads: int = Field(default=4, ge=1)  # Llama attention heads (no grouped-query attention)
    lm_intermediate: int = Field(default=352, ge=8)  # SwiGLU inner width (~2.75 x hidden, as Llama)
    max_positions: int = Field(default=256, ge=32)  # longest LM sequence (64 image tokens + a few turns)
    vision_feature_layer: int = Field(default=-2)  # which vision hidden state the projector reads (LLaVA-1.5: -2)


def vision_config(cfg: TinyLlavaConfig, image_size: int) -> CLIPVisionConfig:
    """The tiny CLIP ViT for ``image_size`` px images."""
    return CLIPVisionConfig(
        hidden_size=cfg.vision_hidden, intermediate_size=4 * cfg.vision_hidden,
        num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
        image_size=image_size, patch_size=cfg.patch_size, num_channels=3,
        projection_dim=cfg.projection_dim, hidden_act="quick_gelu",
    )


def text_encoder_config(cfg: TinyLlavaConfig, vocab: dict[str, int]) -> CLIPTextConfig:
    """The stage-1 CLIP text encoder over the closed vocabulary; it pools at ``</s>``."""
    return CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=cfg.text_encoder_hidden, intermediate_size=4 * cfg.text_encoder_hidden,
        num_hidden_layers=cfg.text_encoder_layers, num_attention_heads=cfg.text_encoder_heads,
        max_position_embeddings=64,  # the longest caption is 31 tokens with <s> and </s>
        projection_dim=cfg.projection_dim, hidden_act="quick_gelu",
        pad_token_id=vocab[PAD], bos_token_id=vocab[BOS], eos_token_id=vocab[EOS],
    )


def build_clip(cfg: TinyLlavaConfig, vocab: dict[str, int], image_size: int) -> CLIPModel:
    """Stage 1's dual encoder: a randomly initialised ``CLIPModel``."""
    config = CLIPConfig(
        text_config=text_encoder_config(cfg, vocab).to_dict(),
        vision_config=vision_config(cfg, image_size).to_dict(),
        projection_dim=cfg.projection_dim,
    )
    return CLIPModel(config)


def lm_config(cfg: TinyLlavaConfig, vocab: dict[str, int]) -> LlamaConfig:
    """The tiny Llama."""
    return LlamaConfig(
        vocab_size=len(vocab), hidden_size=cfg.lm_hidden, intermediate_size=cfg.lm_intermediate,
        num_hidden_layers=cfg.lm_layers, num_attention_heads=cfg.lm_heads, num_key_value_heads=cfg.lm_heads,
        max_position_embeddings=cfg.max_positions, rms_norm_eps=1e-5, tie_word_embeddings=False,
        pad_token_id=vocab[PAD], bos_token_id=vocab[BOS], eos_token_id=vocab[EOS],
    )


def build_lm(cfg: TinyLlavaConfig, vocab: dict[str, int]) -> LlamaForCausalLM:
    """Stage 0's language model: a randomly initialised ``LlamaForCausalLM``."""
    return LlamaForCausalLM(lm_config(cfg, vocab))


def llava_config(cfg: TinyLlavaConfig, vocab: dict[str, int], image_size: int) -> LlavaConfig:
    """LLaVA-1.5's wiring of the two towers: penultimate layer, CLS dropped, GELU MLP projector."""
    return LlavaConfig(
        vision_config=vision_config(cfg, image_size).to_dict() | {"model_type": "clip_vision_model"},
        text_config=lm_config(cfg, vocab).to_dict() | {"model_type": "llama"},
        image_token_index=vocab[IMAGE],
        image_seq_length=num_image_tokens(image_size, cfg.patch_size),
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=cfg.vision_feature_layer,
        pad_token_id=vocab[PAD], bos_token_id=vocab[BOS], eos_token_id=vocab[EOS],
    )


def build_llava(cfg: TinyLlavaConfig, vocab: dict[str, int], image_size: int) -> LlavaForConditionalGeneration:
    """A randomly initialised tiny LLaVA with greedy short-answer generation defaults."""
    model = LlavaForConditionalGeneration(llava_config(cfg, vocab, image_size))
    model.generation_config = GenerationConfig(
        bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[PAD],
        do_sample=False, max_new_tokens=40,  # a caption is at most 30 words
    )
    return model


def assemble_llava(cfg: TinyLlavaConfig, vocab: dict[str, int], image_size: int,
                   clip: CLIPModel, lm: LlamaForCausalLM, seed: int) -> LlavaForConditionalGeneration:
    """A LLaVA whose vision tower is stage 1's and whose LM is stage 0's; the projector is new (seeded)."""
    torch.manual_seed(seed)
    llava = build_llava(cfg, vocab, image_size)
    llava.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    llava.model.language_model.load_state_dict(lm.model.state_dict())
    llava.lm_head.load_state_dict(lm.lm_head.state_dict())
    return llava


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters (all of them, trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def parameter_counts(llava: LlavaForConditionalGeneration) -> dict[str, int]:
    """Parameters per part of the LLaVA: vision tower, projector, LM (with its head), total."""
    vision = count_parameters(llava.model.vision_tower)
    projector = count_parameters(llava.model.multi_modal_projector)
    lm = count_parameters(llava.model.language_model) + count_parameters(llava.lm_head)
    return {"vision_tower": vision, "projector": projector, "language_model": lm, "total": vision + projector + lm}
