"""mixkit.data: image-classification loaders ('torch', 'ffcv', 'dali') behind ``create_loader``."""

from .base import LoaderBase, resolve_device
from .convert import ConvertResult, write_beton, write_webdataset
from .factory import create_loader, list_backends, register_backend
from .imagefolder import BadSampleWarning, ImageFolderIndex, scan_image_folder, validate_image
from .photos import build_photo_folder
from .sharding import ShardSampler, resolve_rank, sample_order, shard_bounds, shard_indices
