"""Redis behind the shared-state seams: several processes and hosts serve one chat."""
