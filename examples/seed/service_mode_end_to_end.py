# The end-to-end example of the reference documents (service mode), with its two import lines
# changed and APPS_PATH pointing at keepwarm's bundled apps. Nothing else is changed.
import asyncio
from keepwarm import AGI
from keepwarm import AgiEnv

APPS_PATH = "examples/apps"
APP = "mycode_project"

async def main():
    env = AgiEnv(apps_path=APPS_PATH, app=APP, verbose=1)

    started = await AGI.serve(env, action="start")
    print("START:", started["status"])

    status = await AGI.serve(env, action="status")
    print("STATUS:", status["status"], status.get("workers_running_count", 0))

    health = await AGI.serve(env, action="health")
    print("HEALTH:", health["status"], health.get("workers_unhealthy_count", 0))

    stopped = await AGI.serve(env, action="stop", shutdown_on_stop=False)
    print("STOP:", stopped["status"])

if __name__ == "__main__":
    asyncio.run(main())
