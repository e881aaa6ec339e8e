"""The pass manager: the base classes of passes and analyses (passbase.py), their declared options
(options.py), the analysis cache (analysis_manager.py), pipelines and their text form (pipeline.py,
pipeline_text.py), the registries that entry points fill (registry.py), instruments and progress
(instruments.py, progress.py), calibration batches (calibration.py) and the layer-by-layer
calibration runner (sequential.py). It knows no pass by name.
"""
