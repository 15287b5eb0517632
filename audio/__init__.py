"""mixerzoo.audio: speech enhancement (FRCRN) and separation (MossFormer2) — models, data, tasks.

Public API::

    from mixerzoo.audio import FRCRN, MossFormer2, EnhancementTask, SeparationTask
    from mixerzoo.audio import NoiseMixingDataModule, SeparationDataModule, si_snr, pit_si_snr

Needs the ``audio`` extra (``pip install "mixerzoo[audio]"``: torchaudio, soundfile, pesq, pystoi).
"""

from mixerzoo.core.plugins import require

require("soundfile", extra="audio")
require("torchaudio", extra="audio")

from mixerzoo.audio import models  # noqa: E402
from mixerzoo.audio.data import (  # noqa: E402
    AudioError,
    NoiseMixingDataModule,
    NoiseMixingDataset,
    PairedFolderDataset,
    SeparationDataModule,
    SeparationDataset,
    SpeechMixingDataset,
    VoiceBankDemandDataModule,
    read_audio,
    write_audio,
)
from mixerzoo.audio.metrics import pesq, pit_si_snr, si_snr, si_snr_improvement, stoi  # noqa: E402
from mixerzoo.audio.models import (  # noqa: E402
    FRCRN,
    FRCRNStreamer,
    MossFormer2,
    mossformer2_small,
)
from mixerzoo.audio.task import AudioPredictionWriter, EnhancementTask, SeparationTask  # noqa: E402

__all__ = [
    "models",
    "AudioError",
    "NoiseMixingDataModule",
    "NoiseMixingDataset",
    "PairedFolderDataset",
    "SeparationDataModule",
    "SeparationDataset",
    "SpeechMixingDataset",
    "VoiceBankDemandDataModule",
    "read_audio",
    "write_audio",
    "pesq",
    "pit_si_snr",
    "si_snr",
    "si_snr_improvement",
    "stoi",
    "FRCRN",
    "FRCRNStreamer",
    "MossFormer2",
    "mossformer2_small",
    "AudioPredictionWriter",
    "EnhancementTask",
    "SeparationTask",
]
