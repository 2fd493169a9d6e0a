"""Everything TorchServe-specific: protocol front-ends (``zooserve.serving.v2``) and, as the layout
lands, the handler, server lifecycle, management client and exporter."""
