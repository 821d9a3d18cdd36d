"""The Google account: OAuth, Gmail and Drive as a `Source`, watch triggers."""
