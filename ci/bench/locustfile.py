from locust import FastHttpUser, constant, task


class Bench(FastHttpUser):
    wait_time = constant(0)

    @task(3)
    def home(self):
        self.client.get("/")

    @task(1)
    def about(self):
        self.client.get("/about")
