"""The built-in user system of apps: `UserRight(workspace, userId, appId, target) -> rights`."""
