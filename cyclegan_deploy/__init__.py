"""cyclegan-deploy: train, export and run image-to-image GANs fast.

Importing this package (the runtime) never imports torch; `cyclegan_deploy.train` and
`cyclegan_deploy.export` do.
"""

__version__ = "0.1.0"
