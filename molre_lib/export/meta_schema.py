"""MONAI's JSON schema of a bundle's ``configs/metadata.json``, shipped so bundles verify offline.

Source: Project-MONAI/MONAI, ``monai/bundle/meta_schema.json`` at commit 45c798391 (pull request #7409 "Adding
metadata schema to the code base itself", Eric Kerfoot, July 2024; Apache-2.0). That PR moved the schema's
definitions into ``$defs`` and made ``required_packages_version`` (instead of ``optional_packages_version``) a
required key; the file was then taken out of the code base again and published with MONAI's extra test data
instead, so this is the text as it stood in the PR, unchanged (``SCHEMA`` below, loaded from JSON).
``monai.bundle.verify_metadata`` downloads the URL in the metadata's ``schema`` key unless a file already sits at
its ``filepath`` argument: :func:`write_schema` puts this copy there (no network needed).
"""
from __future__ import annotations

import json
from pathlib import Path

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI/blob/45c798391/monai/bundle/meta_schema.json"
SCHEMA_FILE = "meta_schema.json"

SCHEMA: dict = json.loads(r"""
{
 "$schema": "https://json-schema.org/draft/2019-09/schema",
 "$defs": {
  "tensor": {
   "$comment": "Represents a tensor object argument/return value, can be MetaTensor.",
   "type": "object",
   "properties": {
    "type": {
     "type": "string"
    },
    "format": {
     "type": "string"
    },
    "num_channels": {
     "type": "integer"
    },
    "spatial_shape": {
     "type": "array",
     "items": {
      "type": [
       "string",
       "integer"
      ]
     }
    },
    "dtype": {
     "type": "string"
    },
    "value_range": {
     "type": "array",
     "items": {
      "type": "number"
     }
    },
    "is_patch_data": {
     "type": "boolean"
    },
    "channel_def": {
     "type": "object"
    }
   },
   "required": [
    "type",
    "format",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range"
   ]
  },
  "argument": {
   "$comment": "Acceptable input types for model forward pass, arbitrary Python objects not covered.",
   "anyOf": [
    {
     "type": "number"
    },
    {
     "type": "integer"
    },
    {
     "type": "string"
    },
    {
     "type": "boolean"
    },
    {
     "$ref": "#/$defs/tensor"
    }
   ]
  },
  "result": {
   "$comment": "Return value from a model's forward pass, same as an argument for now.",
   "$ref": "#/$defs/argument"
  },
  "network_io": {
   "description": "Defines the format, shape, and meaning of inputs, outputs (and optionally post-processed outputs) to the model.",
   "type": "object",
   "$comment": "Arguments/return values described by pattern property, order considered significant.",
   "properties": {
    "inputs": {
     "type": "object",
     "patternProperties": {
      "^.+$": {
       "$ref": "#/$defs/argument"
      }
     }
    },
    "outputs": {
     "type": "object",
     "patternProperties": {
      "^.+$": {
       "$ref": "#/$defs/result"
      }
     }
    },
    "post_processed_outputs": {
     "$comment": "Return value format after post-processing, not needed if not changed.",
     "type": "object",
     "patternProperties": {
      "^.+$": {
       "$ref": "#/$defs/result"
      }
     }
    }
   },
   "required": [
    "inputs",
    "outputs"
   ]
  }
 },
 "type": "object",
 "properties": {
  "schema": {
   "description": "URL of the schema file.",
   "type": "string"
  },
  "version": {
   "description": "Version number of the bundle.",
   "type": "string"
  },
  "changelog": {
   "description": "Dictionary relating previous version names to strings describing the version.",
   "type": "object"
  },
  "monai_version": {
   "description": "Version of MONAI the bundle was generated with.",
   "type": "string"
  },
  "pytorch_version": {
   "description": "Version of PyTorch the bundle was generated with.",
   "type": "string"
  },
  "numpy_version": {
   "description": "Version of NumPy the bundlewas generated with.",
   "type": "string"
  },
  "required_packages_version": {
   "description": "Dictionary relating required package names to their versions. The bundle requires these packages to operate which are additional to the base requirements for MONAI.",
   "type": "object"
  },
  "task": {
   "description": "Plain-language description of what the bundle is meant to do.",
   "type": "string"
  },
  "description": {
   "description": "Longer form description of what the bundle is, what it does, etc.",
   "type": "string"
  },
  "authors": {
   "description": "State author(s) of the bundle.",
   "type": "string"
  },
  "copyright": {
   "description": "State copyright of the bundle.",
   "type": "string"
  },
  "data_source": {
   "description": "Where to download or prepare the data used in this bundle.",
   "type": "string"
  },
  "data_type": {
   "description": "Type of the data, like: `dicom`, `nibabel`, etc.",
   "type": "string"
  },
  "image_classes": {
   "description": "Description for every class of the input tensors.",
   "type": "string"
  },
  "label_classes": {
   "description": "Description for every class of the input tensors if present.",
   "type": "string"
  },
  "pred_classes": {
   "description": "Description for every class of the output prediction(s).",
   "type": "string"
  },
  "eval_metrics": {
   "description": "Dictionary relating evaluation metrics to the achieved scores.",
   "type": "object"
  },
  "intended_use": {
   "description": "What the bundle is to be used for, ie. what task it accomplishes.",
   "type": "string"
  },
  "references": {
   "description": "List of published referenced relating to the bundle.",
   "type": "array",
   "items": {
    "type": "string"
   }
  },
  "supported_apps": {
   "description": "List of supported applications, eg. 'monai-label'",
   "type": "object"
  },
  "network_data_format": {
   "$ref": "#/$defs/network_io"
  }
 },
 "$comment": "This permits definitions for multiple networks with format <network-name>_data_format",
 "patternProperties": {
  "^[_a-zA-Z0-9]+_data_format$": {
   "$ref": "#/$defs/network_io"
  }
 },
 "required": [
  "schema",
  "version",
  "monai_version",
  "pytorch_version",
  "numpy_version",
  "required_packages_version",
  "task",
  "description",
  "authors",
  "copyright",
  "network_data_format"
 ]
}
""")


def write_schema(path: str | Path) -> Path:
    """Write the schema to ``path`` (for ``verify_metadata(meta_file, filepath=path)``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(SCHEMA, indent=1))
    return path
