"""mixkit.data: image-classification loaders ('torch', 'ffcv', 'dali') behind ``create_loader``."""

from .base import LoaderBase
from .beton import BetonInfo, check_beton
from .config import LoaderConfig, resolve_device
from .convert import BetonOptions, ConvertResult, write_beton, write_webdataset
from .factory import create_loader, list_backends, register_backend
from .imagefolder import BadSampleWarning, ImageFolderIndex, load_rgb, scan_image_folder, validate_image
from .sharding import ShardSampler, resolve_rank, sample_order, shard_bounds, shard_indices
