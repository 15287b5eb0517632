"""Audio models: FRCRN (speech enhancement) and MossFormer2 (speech separation)."""

from mixerzoo.audio.models.frcrn import FRCRN, FRCRNOutput, FRCRNStreamer
from mixerzoo.audio.models.mossformer2 import MossFormer2, mossformer2_small

__all__ = ["FRCRN", "FRCRNOutput", "FRCRNStreamer", "MossFormer2", "mossformer2_small"]
